# Identities and least-privilege grants.
#
# - one service account per function (<name_prefix><function>), with only what its step does;
# - <name_prefix>vertex-jobs: what Vertex AI training / tuning jobs run as;
# - <name_prefix>invoker: the identity Pub/Sub push subscriptions and Eventarc triggers use
#   to call the event functions (roles/run.invoker on exactly those services);
# - <name_prefix>fn-builder: what Cloud Build uses to build the function sources.

# BEGIN derived grants
# Everything below, to END, depends only on local.topology and variables: the tests in
# tests/infra/test_topology_grants.py evaluate exactly this text with `terraform apply`
# on a provider-less copy and compare the grants with the topology's declarations.
locals {
  topology_apis             = try(local.topology.apis, {})
  topology_service_accounts = try(local.topology.service_accounts, {})

  # Each function's `access` from its topology entry; nothing declared, nothing granted.
  function_access = {
    for name, spec in local.topology.functions : name => {
      publish = try(spec.access.publish, [])
      read    = try(spec.access.read, [])
      write   = try(spec.access.write, [])
      create  = try(spec.access.create, [])
      apis    = try(spec.access.apis, [])
      act_as  = try(spec.access.act_as, [])
      # warehouse datasets: tables_read dataViewer, tables_write dataEditor
      tables_read  = try(spec.access.tables_read, [])
      tables_write = try(spec.access.tables_write, [])
    }
  }

  # The Vertex AI jobs' account (the trainer), declared under service_accounts.
  vertex_jobs_access = {
    publish = try(local.topology_service_accounts["vertex-jobs"].access.publish, [])
    read    = try(local.topology_service_accounts["vertex-jobs"].access.read, [])
    write   = try(local.topology_service_accounts["vertex-jobs"].access.write, [])
    # Its batch prediction jobs' output (topology tables_read / tables_write).
    tables_read  = try(local.topology_service_accounts["vertex-jobs"].access.tables_read, [])
    tables_write = try(local.topology_service_accounts["vertex-jobs"].access.tables_write, [])
    roles = distinct(flatten([
      for api in try(local.topology_service_accounts["vertex-jobs"].access.apis, []) : local.topology_apis[api].roles
    ]))
  }

  # read: objectViewer (get, list); write: objectUser (get, list, create, update, delete);
  # create: objectCreator (create only: no overwrite, which needs delete).
  function_bucket_grants = merge(
    {
      for pair in flatten([
        for fn, access in local.function_access : [
          for bucket in access.read : { fn = fn, bucket = bucket, role = "roles/storage.objectViewer" }
        ]
      ]) : "${pair.fn}:${pair.bucket}:read" => pair
    },
    {
      for pair in flatten([
        for fn, access in local.function_access : [
          for bucket in access.write : { fn = fn, bucket = bucket, role = "roles/storage.objectUser" }
        ]
      ]) : "${pair.fn}:${pair.bucket}:write" => pair
    },
    {
      for pair in flatten([
        for fn, access in local.function_access : [
          for bucket in access.create : { fn = fn, bucket = bucket, role = "roles/storage.objectCreator" }
        ]
      ]) : "${pair.fn}:${pair.bucket}:create" => pair
    },
  )

  # Warehouse datasets: tables_read dataViewer; tables_write dataEditor (create tables,
  # insert and read rows). Queries and loads also need the bigquery-jobs api's jobUser.
  function_dataset_grants = merge(
    {
      for pair in flatten([
        for fn, access in local.function_access : [
          for dataset in access.tables_read : { fn = fn, dataset = dataset, role = "roles/bigquery.dataViewer" }
        ]
      ]) : "${pair.fn}:${pair.dataset}:read" => pair
    },
    {
      for pair in flatten([
        for fn, access in local.function_access : [
          for dataset in access.tables_write : { fn = fn, dataset = dataset, role = "roles/bigquery.dataEditor" }
        ]
      ]) : "${pair.fn}:${pair.dataset}:write" => pair
    },
  )

  function_topic_grants = {
    for pair in flatten([
      for fn, access in local.function_access : [
        for topic in access.publish : { fn = fn, topic = topic }
      ]
    ]) : "${pair.fn}:${pair.topic}" => pair
  }

  # Project roles of the Google APIs each function calls (topology `apis`).
  function_project_grants = {
    for pair in distinct(flatten([
      for fn, access in local.function_access : [
        for api in access.apis : [
          for role in local.topology_apis[api].roles : { fn = fn, role = role }
        ]
      ]
    ])) : "${pair.fn}:${pair.role}" => pair
  }

  # actAs (roles/iam.serviceAccountUser) on the accounts a function names in `act_as`:
  # vertex-jobs for the functions that submit Vertex AI jobs; endpoint (deploy) only when
  # var.endpoint_service_account names one.
  act_as_accounts = {
    for name, account in local.topology_service_accounts : name => (
      try(account.external, false) ? (name == "endpoint" ? var.endpoint_service_account : null) : name
    )
  }
  function_act_as_grants = {
    for pair in flatten([
      for fn, access in local.function_access : [
        for account in access.act_as : { fn = fn, account = account }
      ]
    ]) : "${pair.fn}:${pair.account}" => pair if local.act_as_accounts[pair.account] != null
  }
  job_submitters = toset([for fn, access in local.function_access : fn if contains(access.act_as, "vertex-jobs")])

  # Who may call each HTTP function: its topology `invokers` group's variable.
  invoker_groups = {
    retrain = var.train_http_invokers
    bless   = var.bless_http_invokers
    review  = var.review_http_invokers
  }
  http_invoker_grants = {
    for pair in flatten([
      for fn, spec in local.topology.functions : [
        for member in try(local.invoker_groups[spec.invokers], []) : { fn = fn, member = member }
      ] if spec.trigger.type == "http"
    ]) : "${pair.fn}:${pair.member}" => pair
  }
}
# END derived grants

locals {
  reserved_account_suffixes = ["invoker", "vertex-jobs", "fn-builder"]
  vertex_ai_service_agent   = "serviceAccount:service-${local.project_number}@gcp-sa-aiplatform.iam.gserviceaccount.com"
}

resource "terraform_data" "topology_checks" {
  input = keys(local.functions)

  lifecycle {
    precondition {
      condition     = alltrue([for fn, spec in local.topology.functions : spec.trigger.type != "http" || contains(keys(local.invoker_groups), try(spec.invokers, ""))])
      error_message = "Every HTTP function in topology.yaml names its invokers: ${join(" or ", keys(local.invoker_groups))}."
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

# actAs on the accounts a function's `act_as` names: the Vertex AI jobs' account (the
# functions that submit jobs), the Dataflow workers' account (the functions that launch
# Beam jobs), the endpoint's account (deploy, when one is set).
resource "google_service_account_iam_member" "function_act_as" {
  for_each = local.function_act_as_grants

  service_account_id = (
    each.value.account == "vertex-jobs"
    ? google_service_account.vertex_jobs.name
    : each.value.account == "dataflow-workers"
    ? google_service_account.dataflow_workers.name # infra/dataflow.tf
    : "projects/${var.project_id}/serviceAccounts/${local.act_as_accounts[each.value.account]}"
  )
  role   = "roles/iam.serviceAccountUser"
  member = google_service_account.function[each.value.fn].member
}

# ------------------------------------------------------------------ Vertex AI jobs grants

resource "google_storage_bucket_iam_member" "vertex_jobs_read" {
  for_each = toset(local.vertex_jobs_access.read)

  bucket = local.topology_buckets[each.key]
  role   = "roles/storage.objectViewer"
  member = google_service_account.vertex_jobs.member

  depends_on = [google_storage_bucket.landing, google_storage_bucket.artifacts]
}

resource "google_storage_bucket_iam_member" "vertex_jobs_write" {
  for_each = toset(local.vertex_jobs_access.write)

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
  for_each = toset(local.vertex_jobs_access.roles)

  project = var.project_id
  role    = each.key
  member  = google_service_account.vertex_jobs.member
}

# The trainer image is pulled by Vertex AI's service agent, never by the job's own
# service account: "You can't configure a custom service account to pull images from
# Artifact Registry. Vertex AI uses the default service account to pull images."
# (cloud.google.com/vertex-ai/docs/general/custom-service-account). Explicit on the
# repository, so a CMEK or cross-project repository still serves it.
resource "google_artifact_registry_repository_iam_member" "vertex_service_agent_reader" {
  repository = google_artifact_registry_repository.images.name
  location   = google_artifact_registry_repository.images.location
  role       = "roles/artifactregistry.reader"
  member     = local.vertex_ai_service_agent
}

# ------------------------------------------------------------------ the endpoint's account

# Vertex AI never tells a serving container its model version id, so the model server
# reads it from models/<dataset>/serving.json (the entry of the run the deployer names in
# CASCADE_SERVING_RUN_ID) as the endpoint's own account. Object Viewer on the artifacts
# bucket, limited by an IAM condition to those files (conditions need uniform
# bucket-level access, which storage.tf enforces); none without an account (Vertex AI's
# default identity may read only the model, and the deployer then tells the container
# nothing to read).
resource "google_storage_bucket_iam_member" "endpoint_reads_serving_state" {
  count = var.endpoint_service_account == null ? 0 : 1

  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${var.endpoint_service_account}"

  condition {
    title       = "serving-json-only"
    description = "models/<dataset>/serving.json only: where the model server reads its own model version."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.artifacts.name}/objects/models/\") && resource.name.endsWith(\"/serving.json\")"
  }
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

# Google's custom build service account guide for Cloud Run functions asks for Logs
# Writer, Artifact Registry Writer (the gcf-artifacts image repository) and Storage Object
# Admin (the function source, and the build's images). Object Admin is limited here to
# the sources bucket and the gcf-v2-* buckets Cloud Functions stages sources in.
resource "google_storage_bucket_iam_member" "builder_reads_sources" {
  bucket = google_storage_bucket.function_sources.name
  role   = "roles/storage.objectAdmin"
  member = google_service_account.builder.member
}

resource "google_project_iam_member" "builder_staged_sources" {
  project = var.project_id
  role    = "roles/storage.objectAdmin"
  member  = google_service_account.builder.member

  condition {
    title       = "gcf-staging-buckets"
    description = "Only the buckets Cloud Functions stages sources and build artifacts in."
    expression  = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-\")"
  }
}

# ------------------------------------------------------------------ CMEK

resource "google_kms_crypto_key_iam_member" "service_agents" {
  for_each = var.kms_key_name == null ? {} : {
    storage           = data.google_storage_project_service_account.gcs.member
    pubsub            = local.pubsub_service_agent
    artifact_registry = "serviceAccount:service-${local.project_number}@gcp-sa-artifactregistry.iam.gserviceaccount.com"
    bigquery          = "serviceAccount:bq-${local.project_number}@bigquery-encryption.iam.gserviceaccount.com"
  }

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = each.value
}
