# Precomputed answers for static and hybrid serving (cascade.serving.precomputed): one
# Cloud Bigtable instance and one table for every dataset. Row keys are
# <dataset>#<model version>#<salt>#<entity key>; one column family "p" holding the answer
# (JSON) in column "a". A model version's answers are dropped by their row-key prefix.
#
# Off by default (an instance bills by the node-hour). To enable it, declare
# var.precomputed_store in variables.tf and read it in local.precomputed_store below.

locals {
  precomputed_store = {
    enabled     = false
    instance_id = "${var.name_prefix}precomputed"
    table       = "precomputed"
    zone        = "${var.region}-b"
    min_nodes   = 1
    max_nodes   = 3
    cpu_target  = 60
  }
  precomputed_enabled = local.precomputed_store.enabled
  # The model server reads (the Vertex AI endpoint's account); the batch-collect function
  # loads a collected batch's answers. Nobody else gets data access.
  precomputed_readers = local.precomputed_enabled && var.endpoint_service_account != null ? toset(["serviceAccount:${var.endpoint_service_account}"]) : toset([])
  precomputed_writers = local.precomputed_enabled ? toset([for name in ["batch-collect"] : name if contains(keys(local.functions), name)]) : toset([])
  # Where the store is, for the functions that load it (batch-collect) or tell a deployed
  # model's container about it (deploy): cascade.serving.precomputed.PrecomputedSettings.
  precomputed_users = toset(["batch-collect", "deploy"])
  precomputed_environment = local.precomputed_enabled ? {
    CASCADE_PRECOMPUTED_INSTANCE = local.precomputed_store.instance_id
    CASCADE_PRECOMPUTED_TABLE    = local.precomputed_store.table
  } : {}
}

resource "google_bigtable_instance" "precomputed" {
  count = local.precomputed_enabled ? 1 : 0

  name                = local.precomputed_store.instance_id
  display_name        = "Cascade precomputed answers"
  deletion_protection = true
  labels              = { purpose = "precomputed-answers" }

  cluster {
    cluster_id   = "${local.precomputed_store.instance_id}-c1"
    zone         = local.precomputed_store.zone
    storage_type = "SSD" # point reads on the request path
    kms_key_name = var.kms_key_name

    autoscaling_config {
      min_nodes  = local.precomputed_store.min_nodes
      max_nodes  = local.precomputed_store.max_nodes
      cpu_target = local.precomputed_store.cpu_target
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

resource "google_bigtable_table" "precomputed" {
  count = local.precomputed_enabled ? 1 : 0

  name                = local.precomputed_store.table
  instance_name       = one(google_bigtable_instance.precomputed[*].name)
  deletion_protection = "PROTECTED"

  column_family {
    family = "p"
  }
}

# One cell per column: a rewrite of an answer replaces it (the reader also asks for the
# newest cell only, because garbage collection is lazy).
resource "google_bigtable_gc_policy" "precomputed_answers" {
  count = local.precomputed_enabled ? 1 : 0

  instance_name   = one(google_bigtable_instance.precomputed[*].name)
  table           = one(google_bigtable_table.precomputed[*].name)
  column_family   = "p"
  deletion_policy = "ABANDON"

  max_version {
    number = 1
  }
}

# Least privilege, on the table only: reading rows for the model server, reading and
# mutating rows (load a version, drop a version by its prefix) for the loader.
resource "google_bigtable_table_iam_member" "precomputed_reader" {
  for_each = local.precomputed_readers

  instance_name = one(google_bigtable_instance.precomputed[*].name)
  table         = one(google_bigtable_table.precomputed[*].name)
  role          = "roles/bigtable.reader"
  member        = each.value
}

resource "google_bigtable_table_iam_member" "precomputed_writer" {
  for_each = local.precomputed_writers

  instance_name = one(google_bigtable_instance.precomputed[*].name)
  table         = one(google_bigtable_table.precomputed[*].name)
  role          = "roles/bigtable.user"
  member        = "serviceAccount:${google_service_account.function[each.key].email}"
}
