# Optional periodic retraining: one Cloud Scheduler job per dataset in
# var.retrain_schedules publishes a train request to the train-requests topic.
# The message carries no request_id: each publish has its own Pub/Sub message id, which
# the train function uses as the request id, so every tick is a new request.
# The body is a TrainRequest (cascade/core/messages.py, which refuses unknown fields);
# `reason` says why the run exists, as `cascade train` and transform say it.
# tests/infra/test_message_contracts.py feeds this exact body through the train function.

resource "google_cloud_scheduler_job" "retrain" {
  for_each = var.retrain_schedules

  name        = "${var.name_prefix}retrain-${replace(each.key, "_", "-")}"
  description = "Retrain dataset ${each.key} on a schedule."
  region      = var.region
  schedule    = each.value.schedule
  time_zone   = each.value.time_zone
  paused      = each.value.paused

  pubsub_target {
    topic_name = google_pubsub_topic.this[local.train_requests_topic].id
    data = base64encode(jsonencode({
      dataset         = each.key
      tune            = each.value.tune
      hyperparameters = each.value.hyperparameters
      reason          = "scheduled retrain (${each.value.schedule}, ${each.value.time_zone})"
    }))
    attributes = {
      origin = "cloud-scheduler"
    }
  }

  lifecycle {
    precondition {
      condition     = contains(keys(local.topology.topics), local.train_requests_topic)
      error_message = "topology.yaml must define the train-requests topic that retraining publishes to."
    }
  }
}

# The topology's schedules (topology.yaml `schedules`): one Cloud Scheduler job each,
# publishing the schedule's `data` as the JSON body of one message to its topic at every
# tick. The local cloud's scheduler (cascade.localcloud.scheduler) publishes the same body
# on the same cron. `reconcile` is one: the sweep that resumes work an event loss or a
# crash left unfinished, so nothing accepted waits for a person to run `cascade reconcile`.
resource "google_cloud_scheduler_job" "topology" {
  for_each = try(local.topology.schedules, {})

  name        = "${var.name_prefix}${each.key}"
  description = try(each.value.description, "Topology schedule ${each.key}.")
  region      = var.region
  schedule    = each.value.schedule
  time_zone   = try(each.value.time_zone, "Etc/UTC")

  pubsub_target {
    topic_name = google_pubsub_topic.this[each.value.topic].id
    data       = base64encode(jsonencode(try(each.value.data, {})))
    attributes = {
      origin   = "cloud-scheduler"
      schedule = each.key
    }
  }
}
