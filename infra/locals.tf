locals {
  repo_root = abspath("${path.module}/..")

  # ---------------------------------------------------------------- topology
  # The single source of truth for functions and triggers, decoded as is. Defaults are
  # applied exactly as cascade.core.topology.parse_topology does: a shallow merge of the
  # topology's `defaults` with each function, then the RetryPolicy model defaults.
  topology          = yamldecode(file(coalesce(var.topology_path, "${path.module}/topology.yaml")))
  topology_defaults = local.topology.defaults
  retry_model_defaults = {
    policy                = "retry"
    max_delivery_attempts = 5
    minimum_backoff_s     = 10
    maximum_backoff_s     = 600
  }
  trigger_event_type_defaults = {
    storage = "google.cloud.storage.object.v1.finalized"
    topic   = "google.cloud.pubsub.topic.v1.messagePublished"
    http    = null
  }

  function_specs = {
    for name, spec in local.topology.functions : name => merge(local.topology_defaults, spec)
  }

  # One uniform record per function. `delivery` says how events reach it:
  #   http     - no events; called over HTTPS with IAM.
  #   push     - topic trigger that retries: a Terraform-owned push subscription with the
  #              topology's backoff and a dead_letter_policy (pubsub.tf).
  #   eventarc - storage trigger, or a topic trigger with policy do_not_retry: the
  #              function's own Eventarc event_trigger (functions.tf).
  functions = {
    for name, spec in local.function_specs : name => {
      source            = spec.source
      entry_point       = spec.entry_point
      signature         = spec.signature
      trigger_type      = spec.trigger.type
      trigger_bucket    = try(spec.trigger.bucket, null)
      trigger_topic     = try(spec.trigger.topic, null)
      event_type        = try(spec.trigger.event_type, local.trigger_event_type_defaults[spec.trigger.type])
      retry             = merge(local.retry_model_defaults, try(spec.retry, {}))
      dead_letter_topic = spec.dead_letter_topic
      timeout_s         = spec.timeout_s
      memory            = spec.memory
      cpu               = tostring(spec.cpu)
      max_instances     = spec.max_instances
      max_event_age_s   = spec.max_event_age_s
      delivery = (
        spec.trigger.type == "http" ? "http" :
        spec.trigger.type == "topic" && try(spec.retry.policy, "retry") == "retry" ? "push" :
        "eventarc"
      )
    }
  }

  http_functions     = { for name, fn in local.functions : name => fn if fn.delivery == "http" }
  push_functions     = { for name, fn in local.functions : name => fn if fn.delivery == "push" }
  eventarc_functions = { for name, fn in local.functions : name => fn if fn.delivery == "eventarc" }
  event_functions    = { for name, fn in local.functions : name => fn if fn.delivery != "http" }

  # ---------------------------------------------------------------- names
  function_names = { for name, _ in local.functions : name => "${var.name_prefix}${name}" }
  topic_ids      = { for topic, _ in local.topology.topics : topic => "${var.name_prefix}${topic}" }

  bucket_location = coalesce(var.bucket_location, var.region)
  bucket_names = {
    landing          = coalesce(var.bucket_names.landing, "${var.project_id}-${var.name_prefix}landing")
    artifacts        = coalesce(var.bucket_names.artifacts, "${var.project_id}-${var.name_prefix}artifacts")
    function_sources = coalesce(var.bucket_names.function_sources, "${var.project_id}-${var.name_prefix}function-sources")
  }
  # Logical bucket names of the topology -> real bucket names.
  topology_buckets = {
    landing   = local.bucket_names.landing
    artifacts = local.bucket_names.artifacts
  }

  trainer_image = coalesce(
    var.trainer_image,
    "${var.region}-docker.pkg.dev/${var.project_id}/${var.name_prefix}images/trainer:latest",
  )

  # ---------------------------------------------------------------- packaging
  # Written by `cascade package-functions`: {"functions": {name: {"zip": ..., "sha256": ...}}}.
  packages_manifest_path = coalesce(var.function_packages_manifest, "${local.repo_root}/build/functions/manifest.json")
  packages_manifest      = jsondecode(file(local.packages_manifest_path))
  function_packages = {
    for name, _ in local.functions : name => local.packages_manifest.functions[name]
  }

  # ---------------------------------------------------------------- runtime settings
  # The environment every function reads into cascade.core.settings.Settings.
  common_environment = {
    CASCADE_PROJECT          = var.project_id
    CASCADE_REGION           = var.region
    CASCADE_LANDING_BUCKET   = local.bucket_names.landing
    CASCADE_ARTIFACTS_BUCKET = local.bucket_names.artifacts
    CASCADE_TOPIC_PREFIX     = var.name_prefix
  }
  function_environment = {
    for name, fn in local.functions : name => merge(
      local.common_environment,
      {
        CASCADE_FUNCTION_NAME      = name
        CASCADE_FUNCTION_TIMEOUT_S = tostring(fn.timeout_s)
        CASCADE_MAX_EVENT_AGE_S    = tostring(fn.max_event_age_s)
      },
      # Only the functions that submit Vertex AI jobs learn the image and the jobs identity.
      contains(local.job_submitters, name) ? {
        CASCADE_TRAINER_IMAGE        = local.trainer_image
        CASCADE_JOBS_SERVICE_ACCOUNT = google_service_account.vertex_jobs.email
        CASCADE_VERTEX_TENSORBOARD   = local.vertex_tensorboard
      } : {},
      # Only the functions that manage endpoints learn the serving container's image.
      contains(local.function_access[name].apis, "vertex-ai-endpoints") ? {
        CASCADE_SERVING_IMAGE = local.serving_image
      } : {},
      # Only the functions that load or point at the precomputed store learn where it is.
      contains(local.precomputed_users, name) ? local.precomputed_environment : {},
    )
  }

  project_number       = data.google_project.this.number
  pubsub_service_agent = "serviceAccount:service-${local.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

data "google_project" "this" {
  project_id = var.project_id
}
