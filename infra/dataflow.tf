# Apache Beam on Dataflow (docs/beam.md): the statistics of files larger than a function
# can hold run as a Flex Template job of cascade.beam.pipeline.
#
# - the template spec, staging and temp files live under dataflow/ in the artifacts bucket
#   (gs://<artifacts>/dataflow/templates/cascade-beam.json is what Cloud Build's
#   `gcloud dataflow flex-template build` writes; cascade.jobs.dataflow_runner launches it);
# - <name_prefix>dataflow-workers: the identity of the launcher VM and the workers, with
#   the access of its topology entry (service_accounts.dataflow-workers): roles of its
#   apis (roles/dataflow.worker, logging), read on the landing bucket, and write on the
#   artifacts bucket narrowed to the dataflow/ prefix; it pulls the Beam image from the
#   images repository;
# - a function that launches Beam jobs names dataflow-workers in its topology `act_as`:
#   it gets the dataflowLauncher custom role (create, get, list jobs) and actAs on this
#   account only.
# The Dataflow API is enabled with the project's other APIs (infra/README.md).

locals {
  dataflow_workers        = "dataflow-workers"
  dataflow_workers_access = try(local.topology_service_accounts[local.dataflow_workers].access, {})
  dataflow_workers_roles = distinct(flatten([
    for api in try(local.dataflow_workers_access.apis, []) : local.topology_apis[api].roles
  ]))
  dataflow_prefix = "dataflow/"
  dataflow_launchers = toset([
    for fn, access in local.function_access : fn if contains(access.act_as, local.dataflow_workers)
  ])
}

resource "google_service_account" "dataflow_workers" {
  account_id   = "${var.name_prefix}${local.dataflow_workers}"
  display_name = "Cascade Dataflow workers"
  description  = "Runs the Beam pipeline's Dataflow jobs (launcher VM and workers): reads landed files, writes under dataflow/ in artifacts."
}

resource "google_project_iam_member" "dataflow_workers" {
  for_each = toset(local.dataflow_workers_roles)

  project = var.project_id
  role    = each.key
  member  = google_service_account.dataflow_workers.member
}

resource "google_storage_bucket_iam_member" "dataflow_workers_read" {
  for_each = toset(try(local.dataflow_workers_access.read, []))

  bucket = local.topology_buckets[each.key]
  role   = "roles/storage.objectViewer"
  member = google_service_account.dataflow_workers.member

  depends_on = [google_storage_bucket.landing, google_storage_bucket.artifacts]
}

# Objects under dataflow/ only; bucket-level permissions (objects.list, which IAM checks
# on the bucket) so that Beam can match its temp and output files.
resource "google_storage_bucket_iam_member" "dataflow_workers_write" {
  for_each = toset(try(local.dataflow_workers_access.write, []))

  bucket = local.topology_buckets[each.key]
  role   = "roles/storage.objectUser"
  member = google_service_account.dataflow_workers.member

  condition {
    title       = "dataflow-prefix-only"
    description = "Objects under dataflow/ (template, staging, temp, job outputs); listing the bucket."
    expression  = "resource.type == \"storage.googleapis.com/Bucket\" || resource.name.startsWith(\"projects/_/buckets/${local.topology_buckets[each.key]}/objects/${local.dataflow_prefix}\")"
  }

  depends_on = [google_storage_bucket.artifacts]
}

resource "google_artifact_registry_repository_iam_member" "dataflow_workers_images" {
  repository = google_artifact_registry_repository.images.name
  location   = google_artifact_registry_repository.images.location
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.dataflow_workers.member
}

# Launching a Flex Template job and following it: create, get, list jobs, nothing else.
# (roles/dataflow.developer also updates and cancels any job of the project, and checkov
# counts it among the roles that can impersonate service accounts: CKV_GCP_49.)
resource "google_project_iam_custom_role" "dataflow_launcher" {
  role_id     = "${replace(var.name_prefix, "-", "_")}dataflowLauncher"
  title       = "Cascade Dataflow launcher"
  description = "Launch the Beam pipeline's Flex Template jobs and read their state."
  permissions = ["dataflow.jobs.create", "dataflow.jobs.get", "dataflow.jobs.list"]
}

resource "google_project_iam_member" "dataflow_launcher" {
  for_each = local.dataflow_launchers

  project = var.project_id
  role    = google_project_iam_custom_role.dataflow_launcher.id
  member  = google_service_account.function[each.key].member
}
