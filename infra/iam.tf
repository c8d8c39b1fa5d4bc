# Identities and least-privilege grants.
#
# - one service account per function (<name_prefix><function>), with only what its step does;
# - <name_prefix>vertex-jobs: what Vertex AI training / tuning jobs run as;
# - <name_prefix>invoker: the identity Pub/Sub push subscriptions and Eventarc triggers use
#   to call the event functions (roles/run.invoker on exactly those services);
# - <name_prefix>fn-builder: what Cloud Build uses to build the function sources.

locals {
  # What each step does, keyed by topology function. Bucket and topic keys are the
  # topology's logical names. A function missing here fails the plan (check below).
  function_access = {
    validate = {
      read_buckets  = ["landing"]
      write_buckets = ["artifacts"]
      publish       = ["data-validated", "alerts"]
      project_roles = []
      submits_jobs  = false
    }
    transform = {
      read_buckets  = ["landing"]
      write_buckets = ["artifacts"]
      publish       = ["train-requests", "alerts"]
      project_roles = []
      submits_jobs  = false
    }
    train = {
      read_buckets  = []
      write_buckets = ["artifacts"]
      publish       = ["model-trained", "job-events", "alerts"]
      project_roles = ["roles/aiplatform.user"]
      submits_jobs  = true
    }
    train-http = {
      read_buckets  = []
      write_buckets = ["artifacts"]
      publish       = ["train-requests", "model-trained", "job-events", "alerts"]
      project_roles = ["roles/aiplatform.user"]
      submits_jobs  = true
    }
    evaluate = {
      read_buckets  = []
      write_buckets = ["artifacts"]
      publish       = ["model-blessed", "train-requests", "alerts"]
      project_roles = []
      submits_jobs  = false
    }
    evaluate-job-events = {
      read_buckets  = []
      write_buckets = ["artifacts"]
      publish       = ["train-requests", "alerts"]
      project_roles = ["roles/aiplatform.viewer"]
      submits_jobs  = false
    }
    evaluate-http = {
      read_buckets  = []
      write_buckets = ["artifacts"]
      publish       = ["model-blessed", "alerts"]
      project_roles = []
      submits_jobs  = false
    }
    deploy = {
      read_buckets  = []
      write_buckets = ["artifacts"]
      publish       = ["alerts"]
      project_roles = ["roles/aiplatform.user"]
      submits_jobs  = false
    }
    dead-letters = {
      read_buckets  = []
      write_buckets = ["artifacts"]
      publish       = ["alerts"]
      project_roles = []
      submits_jobs  = false
    }
  }

  vertex_jobs_access = {
    read_buckets  = []
    write_buckets = ["artifacts"]
    publish       = ["model-trained", "job-events"]
    project_roles = ["roles/logging.logWriter"]
  }

  function_bucket_grants = merge(
    {
      for pair in flatten([
        for fn, access in local.function_access : [
          for bucket in access.read_buckets : { key = "${fn}:${bucket}:read", fn = fn, bucket = bucket, role = "roles/storage.objectViewer" }
        ]
      ]) : pair.key => pair if contains(keys(local.functions), pair.fn)
    },
    {
      for pair in flatten([
        for fn, access in local.function_access : [
          for bucket in access.write_buckets : { key = "${fn}:${bucket}:write", fn = fn, bucket = bucket, role = "roles/storage.objectUser" }
        ]
      ]) : pair.key => pair if contains(keys(local.functions), pair.fn)
    },
  )

  function_topic_grants = {
    for pair in flatten([
      for fn, access in local.function_access : [
        for topic in access.publish : { key = "${fn}:${topic}", fn = fn, topic = topic }
      ]
    ]) : pair.key => pair if contains(keys(local.functions), pair.fn)
  }

  function_project_grants = {
    for pair in flatten([
      for fn, access in local.function_access : [
        for role in access.project_roles : { key = "${fn}:${role}", fn = fn, role = role }
      ]
    ]) : pair.key => pair if contains(keys(local.functions), pair.fn)
  }

  job_submitters = toset([for fn, access in local.function_access : fn if access.submits_jobs && contains(keys(local.functions), fn)])

  reserved_account_suffixes = ["invoker", "vertex-jobs", "fn-builder"]
}

resource "terraform_data" "topology_checks" {
  input = keys(local.functions)

  lifecycle {
    precondition {
      condition     = length(setsubtract(keys(local.functions), keys(local.function_access))) == 0
      error_message = "Every function in topology.yaml needs an entry in local.function_access (iam.tf): ${join(", ", setsubtract(keys(local.functions), keys(local.function_access)))}."
    }
    precondition {
      condition     = alltrue([for fn, _ in local.functions : length("${var.name_prefix}${fn}") <= 30 && !contains(local.reserved_account_suffixes, fn)])
      error_message = "Service account ids are <name_prefix><function>: at most 30 characters, and no function may be named invoker, vertex-jobs or fn-builder."
    }
  }
}

# ------------------------------------------------------------------ service accounts

resource "google_service_account" "function" {
  for_each = local.functions

  account_id   = "${var.name_prefix}${each.key}"
  display_name = "Cascade function ${each.key}"
  description  = "Runs the ${each.key} function (${each.value.entry_point}) and nothing else."
}

resource "google_service_account" "vertex_jobs" {
  account_id   = "${var.name_prefix}vertex-jobs"
  display_name = "Cascade Vertex AI jobs"
  description  = "Identity of the training and tuning jobs that the train function submits."
}

resource "google_service_account" "invoker" {
  account_id   = "${var.name_prefix}invoker"
  display_name = "Cascade event delivery"
  description  = "Pub/Sub push subscriptions and Eventarc triggers call the event functions as this account."
}

resource "google_service_account" "builder" {
  account_id   = "${var.name_prefix}fn-builder"
  display_name = "Cascade function builds"
  description  = "Cloud Build runs as this account when it builds the function sources."
}

# ------------------------------------------------------------------ function grants

resource "google_storage_bucket_iam_member" "function" {
  for_each = local.function_bucket_grants

  bucket = local.topology_buckets[each.value.bucket]
  role   = each.value.role
  member = google_service_account.function[each.value.fn].member

  depends_on = [google_storage_bucket.landing, google_storage_bucket.artifacts]
}

resource "google_pubsub_topic_iam_member" "function_publisher" {
  for_each = local.function_topic_grants

  topic  = google_pubsub_topic.this[each.value.topic].id
  role   = "roles/pubsub.publisher"
  member = google_service_account.function[each.value.fn].member
}

resource "google_project_iam_member" "function" {
  for_each = local.function_project_grants

  project = var.project_id
  role    = each.value.role
  member  = google_service_account.function[each.value.fn].member
}

# actAs on the jobs identity: only the functions that submit Vertex AI jobs (train).
resource "google_service_account_iam_member" "job_submitter_act_as" {
  for_each = local.job_submitters

  service_account_id = google_service_account.vertex_jobs.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.function[each.key].member
}

# ------------------------------------------------------------------ Vertex AI jobs grants

resource "google_storage_bucket_iam_member" "vertex_jobs_write" {
  for_each = toset(local.vertex_jobs_access.write_buckets)

  bucket = local.topology_buckets[each.key]
  role   = "roles/storage.objectUser"
  member = google_service_account.vertex_jobs.member

  depends_on = [google_storage_bucket.artifacts]
}

resource "google_pubsub_topic_iam_member" "vertex_jobs_publisher" {
  for_each = toset(local.vertex_jobs_access.publish)

  topic  = google_pubsub_topic.this[each.key].id
  role   = "roles/pubsub.publisher"
  member = google_service_account.vertex_jobs.member
}

resource "google_project_iam_member" "vertex_jobs" {
  for_each = toset(local.vertex_jobs_access.project_roles)

  project = var.project_id
  role    = each.key
  member  = google_service_account.vertex_jobs.member
}

resource "google_artifact_registry_repository_iam_member" "vertex_jobs_reader" {
  repository = google_artifact_registry_repository.images.name
  location   = google_artifact_registry_repository.images.location
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.vertex_jobs.member
}

# ------------------------------------------------------------------ event delivery

# Eventarc delivers storage events as the invoker account.
resource "google_project_iam_member" "invoker_event_receiver" {
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = google_service_account.invoker.member
}

# Pub/Sub mints the push subscriptions' OIDC tokens for the invoker account.
resource "google_service_account_iam_member" "pubsub_mints_invoker_tokens" {
  service_account_id = google_service_account.invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

# Cloud Storage publishes object notifications for the Eventarc storage trigger.
data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

resource "google_project_iam_member" "gcs_publishes_events" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = data.google_storage_project_service_account.gcs.member
}

# ------------------------------------------------------------------ builds

resource "google_project_iam_member" "builder" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/artifactregistry.writer",
  ])

  project = var.project_id
  role    = each.key
  member  = google_service_account.builder.member
}

resource "google_storage_bucket_iam_member" "builder_reads_sources" {
  bucket = google_storage_bucket.function_sources.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.builder.member
}

# ------------------------------------------------------------------ CMEK

resource "google_kms_crypto_key_iam_member" "service_agents" {
  for_each = var.kms_key_name == null ? {} : {
    storage           = data.google_storage_project_service_account.gcs.member
    pubsub            = local.pubsub_service_agent
    artifact_registry = "serviceAccount:service-${local.project_number}@gcp-sa-artifactregistry.iam.gserviceaccount.com"
  }

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = each.value
}
