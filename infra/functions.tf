# The functions (2nd gen), one per topology entry: runtime, entry point, memory, CPU,
# timeout, max instances and environment come from topology.yaml; the source is the
# content-hashed zip that `cascade package-functions` built.

resource "google_cloudfunctions2_function" "this" {
  for_each = local.functions

  name        = local.function_names[each.key]
  location    = var.region
  description = "Cascade ${each.key}: ${each.value.entry_point} (${each.value.trigger_type} trigger, ${each.value.delivery} delivery)."
  labels      = { function = each.key }

  build_config {
    runtime         = local.topology.runtime
    entry_point     = each.value.entry_point
    service_account = google_service_account.builder.id

    source {
      storage_source {
        bucket = google_storage_bucket.function_sources.name
        object = google_storage_bucket_object.function_source[each.key].name
      }
    }
  }

  service_config {
    available_memory                 = each.value.memory
    available_cpu                    = each.value.cpu
    timeout_seconds                  = each.value.timeout_s
    max_instance_count               = each.value.max_instances
    min_instance_count               = 0
    max_instance_request_concurrency = 1
    # Event functions are reached only by Pub/Sub and Eventarc, which count as internal.
    ingress_settings               = each.value.delivery == "http" ? var.http_ingress : "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.function[each.key].email
    environment_variables          = local.function_environment[each.key]
  }

  # Storage triggers (and topic triggers that must not retry) are Eventarc triggers.
  # Retrying topic triggers have no event_trigger: pubsub.tf pushes to them instead.
  dynamic "event_trigger" {
    for_each = each.value.delivery == "eventarc" ? [each.value] : []
    content {
      trigger_region        = each.value.trigger_type == "storage" ? local.bucket_location : var.region
      event_type            = event_trigger.value.event_type
      retry_policy          = event_trigger.value.retry.policy == "retry" ? "RETRY_POLICY_RETRY" : "RETRY_POLICY_DO_NOT_RETRY"
      service_account_email = google_service_account.invoker.email
      pubsub_topic          = event_trigger.value.trigger_type == "topic" ? google_pubsub_topic.this[event_trigger.value.trigger_topic].id : null

      dynamic "event_filters" {
        for_each = event_trigger.value.trigger_type == "storage" ? [local.topology_buckets[event_trigger.value.trigger_bucket]] : []
        content {
          attribute = "bucket"
          value     = event_filters.value
        }
      }
    }
  }

  depends_on = [
    terraform_data.topology_checks,
    google_project_iam_member.invoker_event_receiver,
    google_project_iam_member.gcs_publishes_events,
    google_storage_bucket_iam_member.function,
    google_project_iam_member.builder,
  ]
}

# Only the invoker account may call an event function.
resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = local.event_functions

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.this[each.key].service_config[0].service
  role     = "roles/run.invoker"
  member   = google_service_account.invoker.member
}

# HTTP functions: the callers of the function's topology `invokers` group, never the
# public (train-http: var.train_http_invokers; evaluate-http: var.bless_http_invokers;
# review-http: var.review_http_invokers).
resource "google_cloud_run_v2_service_iam_member" "http_invoker" {
  for_each = local.http_invoker_grants

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.this[each.value.fn].service_config[0].service
  role     = "roles/run.invoker"
  member   = each.value.member
}

# ------------------------------------------------------------------ Eventarc dead letters
#
# Eventarc creates the Pub/Sub subscription of a storage trigger itself, and neither the
# google provider nor the Eventarc API can give it a dead-letter policy. Google's
# documented fix is to update that subscription, which this does with gcloud whenever the
# trigger (and so its subscription) is created or replaced, or the policy changes.
resource "terraform_data" "eventarc_dead_letter" {
  for_each = {
    for name, fn in local.eventarc_functions : name => fn
    if var.configure_eventarc_dead_letter && fn.retry.policy == "retry"
  }

  triggers_replace = {
    trigger               = google_cloudfunctions2_function.this[each.key].event_trigger[0].trigger
    dead_letter_topic     = google_pubsub_topic.this[each.value.dead_letter_topic].id
    max_delivery_attempts = each.value.retry.max_delivery_attempts
    minimum_backoff_s     = each.value.retry.minimum_backoff_s
    maximum_backoff_s     = each.value.retry.maximum_backoff_s
  }

  provisioner "local-exec" {
    interpreter = ["bash", "-euo", "pipefail", "-c"]
    # Find the trigger's subscription, let the Pub/Sub service agent pull from it (it must,
    # to forward a dead letter), then set the dead-letter topic and the backoff.
    command = <<-EOT
      subscription="$(gcloud eventarc triggers describe "$${TRIGGER}" \
        --project="$${PROJECT}" --location="$${REGION}" \
        --format='value(transport.pubsub.subscription)')"
      if [[ -z "$${subscription}" ]]; then
        echo "trigger $${TRIGGER} has no Pub/Sub subscription yet" >&2
        exit 1
      fi
      gcloud pubsub subscriptions add-iam-policy-binding "$${subscription}" \
        --project="$${PROJECT}" --member="$${PUBSUB_SERVICE_AGENT}" \
        --role=roles/pubsub.subscriber >/dev/null
      gcloud pubsub subscriptions update "$${subscription}" \
        --project="$${PROJECT}" \
        --dead-letter-topic="$${DEAD_LETTER_TOPIC}" \
        --max-delivery-attempts="$${MAX_DELIVERY_ATTEMPTS}" \
        --min-retry-delay="$${MIN_RETRY_DELAY}" \
        --max-retry-delay="$${MAX_RETRY_DELAY}"
      echo "dead-letter policy set on $${subscription}"
    EOT
    environment = {
      PROJECT               = var.project_id
      REGION                = var.region
      TRIGGER               = google_cloudfunctions2_function.this[each.key].event_trigger[0].trigger
      DEAD_LETTER_TOPIC     = google_pubsub_topic.this[each.value.dead_letter_topic].id
      MAX_DELIVERY_ATTEMPTS = tostring(each.value.retry.max_delivery_attempts)
      MIN_RETRY_DELAY       = "${each.value.retry.minimum_backoff_s}s"
      MAX_RETRY_DELAY       = "${each.value.retry.maximum_backoff_s}s"
      PUBSUB_SERVICE_AGENT  = local.pubsub_service_agent
    }
  }

  depends_on = [google_pubsub_topic_iam_member.dead_letter_publisher]
}

# The serving container (shared/Dockerfile.serving) the deploy step uploads models with:
# CI passes the digest it pushed; null means serving:latest in the images repository.
locals {
  serving_image = coalesce(
    var.serving_image,
    "${var.region}-docker.pkg.dev/${var.project_id}/${var.name_prefix}images/serving:latest",
  )
}
