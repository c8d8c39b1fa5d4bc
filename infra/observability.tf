# Vertex AI job state changes and Dataflow job messages as job events, and an alert on
# dead letters.

locals {
  job_events_topic     = "job-events"
  train_requests_topic = "train-requests"

  # Vertex AI custom and tuning jobs log under resource.type "ml_job"; the service's own
  # entries (task_name "service") mark state changes: started, failed, succeeded. Each
  # arrives on the job-events topic as a LogEntry JSON whose resource.labels.job_id names
  # the job; evaluate-job-events reads the job's real state from the API, so an entry that
  # is not an end state is harmless. A failure releases the dataset's training lock and
  # fails the run; a tuning job's success publishes model-trained for its best trial.
  vertex_job_event_clauses = [
    "resource.type=\"ml_job\"",
    "resource.labels.task_name=\"service\"",
  ]
  # Dataflow's job messages of Cascade's Beam jobs (cascade-stats-<run>: a file's
  # statistics; cascade-split-<run>: a run's train/eval split;
  # cascade.jobs.beam_spec.dataflow_job_name): "Worker pool stopped.", "Workflow failed.
  # Causes: ..." and the rest. evaluate-job-events asks Dataflow for the job's state and
  # finishes the run's validate or transform when it has ended; any other message is a
  # no-op.
  dataflow_job_event_clauses = [
    "resource.type=\"dataflow_step\"",
    "log_id(\"dataflow.googleapis.com/job-message\")",
    "resource.labels.job_name=~\"^cascade-(stats|split)-\"",
  ]
  default_job_event_log_filter = join(" OR ", [
    for clauses in [local.vertex_job_event_clauses, local.dataflow_job_event_clauses] :
    "(${join(" AND ", clauses)})"
  ])
}

resource "google_logging_project_sink" "job_events" {
  name        = "${var.name_prefix}job-events"
  description = "Vertex AI job state changes and Dataflow job messages of Beam jobs become messages on the job-events topic (evaluate-job-events records them on the run)."
  destination = "pubsub.googleapis.com/${google_pubsub_topic.this[local.job_events_topic].id}"
  filter      = coalesce(var.job_event_log_filter, local.default_job_event_log_filter)

  unique_writer_identity = true

  lifecycle {
    precondition {
      condition     = contains(keys(local.topology.topics), local.job_events_topic)
      error_message = "topology.yaml must define the job-events topic that the job-event log sink writes to."
    }
  }
}

resource "google_pubsub_topic_iam_member" "job_events_sink_publisher" {
  topic  = google_pubsub_topic.this[local.job_events_topic].id
  role   = "roles/pubsub.publisher"
  member = google_logging_project_sink.job_events.writer_identity
}

# Dead letters waiting in a review subscription page whoever var.dead_letter_alert names.
resource "google_monitoring_alert_policy" "dead_letters" {
  for_each = var.dead_letter_alert.enabled ? local.dead_letter_topics : toset([])

  display_name          = "Cascade dead letters on ${local.topic_ids[each.key]}"
  combiner              = "OR"
  notification_channels = var.dead_letter_alert.notification_channels
  severity              = "ERROR"

  conditions {
    display_name = "Undelivered dead letters in ${google_pubsub_subscription.review[each.key].name}"

    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${google_pubsub_subscription.review[each.key].name}\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.dead_letter_alert.threshold
      duration        = "${var.dead_letter_alert.duration_s}s"

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      An event could not be delivered to its Cascade function after the topology's
      max_delivery_attempts and was moved to `${local.topic_ids[each.key]}`.
      Read it with `gcloud pubsub subscriptions pull ${google_pubsub_subscription.review[each.key].name} --limit=10`
      (the attribute CloudPubSubDeadLetterSourceSubscription names the function), fix the
      cause, republish the message to its original topic, then acknowledge it.
    EOT
  }
}
