# The web console as a Cloud Run service (python -m cascade.console.cloudrun), reachable
# only through IAP: IAP is enabled on the service itself (google provider >= 6.30:
# iap_enabled), so every ingress path, the run.app URL included, signs in first; only
# IAP's service agent may invoke the service, and no public member is granted anything.
#
# Who may open it: the members of the three HTTP invoker lists, deploy_approvers and
# console_viewers (roles/iap.httpsResourceAccessor on the service). Who may act: the
# service checks each action against the same lists, passed as CASCADE_CONSOLE_ROLES
# (cascade.console.roles): retrain train_http_invokers, force-bless bless_http_invokers,
# release/discard/schema review_http_invokers, rollback/promote deploy_approvers.
# group: members open the console but never act through it (it cannot expand groups).

locals {
  console_name = "${var.name_prefix}console"
  console_image = coalesce(
    var.console_image,
    "${var.region}-docker.pkg.dev/${var.project_id}/${var.name_prefix}images/console:latest",
  )
  deploy_approvers = var.deploy_approvers == null ? var.bless_http_invokers : var.deploy_approvers

  # The members of each role the console checks (the HTTP functions' invoker lists).
  console_roles = {
    retrain = var.train_http_invokers
    bless   = var.bless_http_invokers
    review  = var.review_http_invokers
    deploy  = local.deploy_approvers
  }
  console_accessors = toset(concat(flatten(values(local.console_roles)), var.console_viewers))
  console_role_groups = sort(distinct([
    for member in flatten(values(local.console_roles)) : member if startswith(lower(member), "group:")
  ]))

  # What the console's actions do, derived from the code they share: a force-bless is
  # evaluate-http's, a release or discard review-http's, a retrain publishes the
  # TrainRequest train-http does (nothing else of train-http: no job is submitted here),
  # a rollback or promote calls deploy's Vertex AI endpoints API (Endpoint.update).
  console_access = {
    publish = sort(distinct(concat(
      ["train-requests"],
      try(local.topology.functions["evaluate-http"].access.publish, []),
      try(local.topology.functions["review-http"].access.publish, []),
    )))
    read = sort(distinct(try(local.topology.functions["review-http"].access.read, [])))
    write = sort(distinct(concat(
      try(local.topology.functions["evaluate-http"].access.write, []),
      try(local.topology.functions["review-http"].access.write, []),
    )))
    roles = sort(distinct(try(local.topology.apis["vertex-ai-endpoints"].roles, [])))
  }
  console_bucket_grants = merge(
    { for bucket in local.console_access.read : "${bucket}:read" => { bucket = bucket, role = "roles/storage.objectViewer" } },
    { for bucket in local.console_access.write : "${bucket}:write" => { bucket = bucket, role = "roles/storage.objectUser" } },
  )

  console_iap_audience = coalesce(
    var.console_iap_audience,
    "/projects/${local.project_number}/locations/${var.region}/services/${local.console_name}",
  )
  # Cloud Run's deterministic URL: https://<service>-<project number>.<region>.run.app
  console_host = "${local.console_name}-${local.project_number}.${var.region}.run.app"
  console_environment = merge(local.common_environment, {
    CASCADE_CONSOLE_IAP_AUDIENCE  = local.console_iap_audience
    CASCADE_CONSOLE_ROLES         = jsonencode(local.console_roles)
    CASCADE_CONSOLE_ALLOWED_HOSTS = jsonencode(concat([local.console_host], var.console_hosts))
    CASCADE_VERTEX_TENSORBOARD    = local.vertex_tensorboard # a run's page links to its experiment run
  })
  iap_service_agent = "serviceAccount:service-${local.project_number}@gcp-sa-iap.iam.gserviceaccount.com"
}

resource "google_service_account" "console" {
  account_id   = local.console_name
  display_name = "Cascade console"
  description  = "Runs the web console on Cloud Run: reads runs, and acts (retrain, force-bless, review, rollback, promote) for callers whose role it checked."
}

resource "google_storage_bucket_iam_member" "console" {
  for_each = local.console_bucket_grants

  bucket = local.topology_buckets[each.value.bucket]
  role   = each.value.role
  member = google_service_account.console.member

  depends_on = [google_storage_bucket.landing, google_storage_bucket.artifacts]
}

resource "google_pubsub_topic_iam_member" "console_publisher" {
  for_each = toset(local.console_access.publish)

  topic  = google_pubsub_topic.this[each.key].id
  role   = "roles/pubsub.publisher"
  member = google_service_account.console.member
}

resource "google_project_iam_member" "console" {
  for_each = toset(local.console_access.roles)

  project = var.project_id
  role    = each.key
  member  = google_service_account.console.member
}

resource "google_cloud_run_v2_service" "console" {
  name        = local.console_name
  location    = var.region
  description = "Cascade web console (python -m cascade.console.cloudrun), behind IAP."
  # IAP on the service guards every ingress path; the container verifies IAP's signed
  # header on every request as well (cascade.console.iap).
  ingress     = "INGRESS_TRAFFIC_ALL"
  iap_enabled = true

  template {
    service_account                  = google_service_account.console.email
    max_instance_request_concurrency = 20
    timeout                          = "300s"

    scaling {
      min_instance_count = 0
      max_instance_count = var.console_max_instances
    }

    containers {
      image = local.console_image

      ports {
        container_port = 8080
      }

      resources {
        # A release re-validates the landed file with the validate step's code.
        limits = {
          cpu    = "1"
          memory = "2Gi"
        }
      }

      dynamic "env" {
        for_each = local.console_environment
        content {
          name  = env.key
          value = env.value
        }
      }
    }
  }

  depends_on = [
    google_storage_bucket_iam_member.console,
    google_pubsub_topic_iam_member.console_publisher,
    google_project_iam_member.console,
  ]
}

# Only IAP invokes the service: IAP authenticates to Cloud Run as its service agent
# (cloud.google.com/run/docs/securing/identity-aware-proxy-cloud-run).
resource "google_cloud_run_v2_service_iam_member" "console_iap_invoker" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.console.name
  role     = "roles/run.invoker"
  member   = local.iap_service_agent
}

# Who may pass IAP to the console (google provider >= 6.31).
resource "google_iap_web_cloud_run_service_iam_member" "console_accessor" {
  for_each = local.console_accessors

  project                = var.project_id
  location               = var.region
  cloud_run_service_name = google_cloud_run_v2_service.console.name
  role                   = "roles/iap.httpsResourceAccessor"
  member                 = each.key
}

check "console_roles_name_no_groups" {
  assert {
    condition     = length(local.console_role_groups) == 0
    error_message = "The console cannot expand Google groups: ${join(", ", local.console_role_groups)} may open the console but their members cannot act through it (retrain, bless, review, rollback, promote) until listed as user: members. The HTTP functions still accept the groups."
  }
}

output "console_url" {
  description = "The console (sign in through IAP)."
  value       = "https://${local.console_host}"
}
