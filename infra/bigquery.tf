# The warehouse: the topology's BigQuery datasets (`warehouse`: batch predictions, the
# endpoints' request logs) and each identity's grants on them (topology access
# tables_read / tables_write; the derived pairs are in iam.tf). Dataset ids are
# <name_prefix><name> with "-" written "_", as cascade.core.settings.warehouse_dataset
# names them. Tables are created by the code that writes them (dataEditor holds
# bigquery.tables.create); nobody's code creates or deletes datasets.

locals {
  topology_warehouse = try(local.topology.warehouse, {})
  warehouse_dataset_ids = {
    for name, _ in local.topology_warehouse : name => replace("${var.name_prefix}${name}", "-", "_")
  }
}

resource "google_bigquery_dataset" "warehouse" {
  for_each = local.topology_warehouse

  project                    = var.project_id
  dataset_id                 = local.warehouse_dataset_ids[each.key]
  location                   = var.region
  description                = each.value.description
  delete_contents_on_destroy = false

  dynamic "default_encryption_configuration" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      kms_key_name = default_encryption_configuration.value
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

resource "google_bigquery_dataset_iam_member" "function" {
  for_each = local.function_dataset_grants

  project    = var.project_id
  dataset_id = google_bigquery_dataset.warehouse[each.value.dataset].dataset_id
  role       = each.value.role
  member     = google_service_account.function[each.value.fn].member
}

resource "google_bigquery_dataset_iam_member" "vertex_jobs_read" {
  for_each = toset(local.vertex_jobs_access.tables_read)

  project    = var.project_id
  dataset_id = google_bigquery_dataset.warehouse[each.key].dataset_id
  role       = "roles/bigquery.dataViewer"
  member     = google_service_account.vertex_jobs.member
}

resource "google_bigquery_dataset_iam_member" "vertex_jobs_write" {
  for_each = toset(local.vertex_jobs_access.tables_write)

  project    = var.project_id
  dataset_id = google_bigquery_dataset.warehouse[each.key].dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = google_service_account.vertex_jobs.member
}
