// The runs list refreshes itself: it asks /api/runs (the same filters and page as the
// page) every few seconds and rebuilds the table's rows. Every value is set as text
// (textContent), never parsed as HTML: dataset names and errors come from data.
"use strict";

(function () {
  const table = document.getElementById("runs");
  const body = document.getElementById("runs-body");
  const empty = document.getElementById("runs-empty");
  if (!table || !body) {
    return;
  }
  const api = table.dataset.api;
  const pollMs = Math.max(500, parseInt(table.dataset.pollMs || "2000", 10));

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) {
      td.className = className;
    }
    return td;
  }

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  function row(run) {
    const tr = document.createElement("tr");
    tr.dataset.runId = run.run_id;
    const id = cell("");
    id.appendChild(link("/runs/" + encodeURIComponent(run.run_id), run.run_id));
    const dataset = cell("");
    dataset.appendChild(link("/datasets/" + encodeURIComponent(run.dataset), run.dataset));
    const trigger = cell(run.trigger);
    trigger.title = run.trigger_text;
    tr.append(
      id,
      dataset,
      trigger,
      cell(run.state, "state state-" + run.state),
      cell(run.created_at),
      cell(run.updated_at),
      cell(run.error, "error-text"),
    );
    return tr;
  }

  async function refresh() {
    try {
      const answer = await fetch(api, { credentials: "same-origin", cache: "no-store" });
      if (answer.ok) {
        const page = await answer.json();
        body.replaceChildren(...page.runs.map(row));
        if (empty) {
          empty.hidden = page.runs.length > 0;
        }
        table.dataset.refreshed = String(Date.now());
      }
    } catch (error) {
      // The console is down or restarting: keep the rows and try again later.
    }
    window.setTimeout(refresh, pollMs);
  }

  window.setTimeout(refresh, pollMs);
})();
