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
