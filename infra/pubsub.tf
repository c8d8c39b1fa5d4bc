# Topics, event delivery and dead letters.
#
# Topic-triggered functions that retry are fed by push subscriptions that this file owns
# (not by Eventarc), so that their retry backoff and dead-letter policy come from the
# topology and are visible to Terraform. See README.md, "Dead-letter design".

resource "google_pubsub_topic" "this" {
  for_each = local.topology.topics

  name         = local.topic_ids[each.key]
  kms_key_name = var.kms_key_name
  labels       = { logical-name = each.key }

  message_retention_duration = "604800s"

  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

# ------------------------------------------------------------------ push delivery

resource "google_pubsub_subscription" "push" {
  for_each = local.push_functions

  name  = local.function_names[each.key]
  topic = google_pubsub_topic.this[each.value.trigger_topic].id

  # The function must answer within its timeout; Pub/Sub's ceiling is 600 s.
  ack_deadline_seconds       = min(each.value.timeout_s, 600)
  message_retention_duration = "${each.value.max_event_age_s <= 604800 ? max(each.value.max_event_age_s, 600) : 604800}s"
  retain_acked_messages      = false

  expiration_policy {
    ttl = ""
  }

  retry_policy {
    minimum_backoff = "${each.value.retry.minimum_backoff_s}s"
    maximum_backoff = "${each.value.retry.maximum_backoff_s}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.this[each.value.dead_letter_topic].id
    max_delivery_attempts = each.value.retry.max_delivery_attempts
  }

  push_config {
    # functions-framework turns a Pub/Sub push body into a messagePublished CloudEvent and
    # takes the event's source topic from this path.
    push_endpoint = "${google_cloudfunctions2_function.this[each.key].service_config[0].uri}/projects/${var.project_id}/topics/${local.topic_ids[each.value.trigger_topic]}"

    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = google_cloudfunctions2_function.this[each.key].service_config[0].uri
    }
  }

  labels = { function = each.key }

  depends_on = [
    google_cloud_run_v2_service_iam_member.invoker,
    google_service_account_iam_member.pubsub_mints_invoker_tokens,
  ]
}

# The Pub/Sub service agent pulls a message it forwards to a dead-letter topic...
resource "google_pubsub_subscription_iam_member" "dead_letter_forwarding" {
  for_each = local.push_functions

  subscription = google_pubsub_subscription.push[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# ------------------------------------------------------------------ dead letters

locals {
  dead_letter_topics = toset([for fn in local.event_functions : fn.dead_letter_topic])
  triggered_topics   = toset([for fn in local.event_functions : fn.trigger_topic if fn.trigger_topic != null])

  # Topics that no function consumes (alerts), and dead-letter topics (which the
  # dead-letters function records but never re-delivers), get a pull subscription that
  # people and on-call tooling read, so nothing published there is lost. A message that
  # is nacked max times there escalates: dead letters to the escalation topic (alerts),
  # everything else to the topic's dead-letter topic.
  review_topics = {
    for topic, _ in local.topology.topics : topic => (
      contains(local.dead_letter_topics, topic) ? var.review_escalation_topic : local.topology_defaults.dead_letter_topic
    ) if !contains(local.triggered_topics, topic) || contains(local.dead_letter_topics, topic)
  }
}

# The Pub/Sub service agent publishes forwarded dead letters...
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = toset(concat(tolist(local.dead_letter_topics), values(local.review_topics)))

  topic  = google_pubsub_topic.this[each.key].id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_service_agent
}

resource "google_pubsub_subscription" "review" {
  for_each = local.review_topics

  name                       = "${local.topic_ids[each.key]}-review"
  topic                      = google_pubsub_topic.this[each.key].id
  ack_deadline_seconds       = 60
  message_retention_duration = var.review_retention
  retain_acked_messages      = true

  expiration_policy {
    ttl = ""
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.this[each.value].id
    max_delivery_attempts = 100
  }

  labels = { purpose = "review" }
}

# ...after pulling them from the subscription that gave up on them.
resource "google_pubsub_subscription_iam_member" "review_forwarding" {
  for_each = local.review_topics

  subscription = google_pubsub_subscription.review[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
