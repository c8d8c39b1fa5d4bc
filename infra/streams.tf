# Datasets fed by a stream (topology `streams`, cascade.core.streams, docs/ingestion.md).
#
# For each dataset: an Avro schema, the ingestion topic that enforces it at publish (JSON
# encoding: a message the schema refuses is refused to its publisher), and a Pub/Sub
# Cloud Storage subscription that writes the messages in batches as Avro files
# <dataset>/stream-<datetime>_<uuid>.avro into the landing bucket, so no code of ours runs
# per message; each file's finalize starts validate like any landed file. The local
# cloud's gcs-subscriber makes the same subscription request (gcs_subscriber.py,
# subscription_request) and writes the files the same way.

locals {
  # The stream entries with StreamSpec's defaults, merged as cascade.core.streams reads
  # them (a shallow merge; the topology's keys win).
  stream_defaults = {
    description           = ""
    max_duration_s        = 300
    max_bytes             = 10485760
    max_messages          = 1000
    ack_deadline_s        = 600
    max_delivery_attempts = 5
  }
  streams = {
    for dataset, spec in try(local.topology.streams, {}) : dataset => merge(local.stream_defaults, spec)
  }
  # The schema files are the repository's: infra/schemas/ (whichever topology file is read).
  stream_schema_dir = path.module
  stream_ids        = { for dataset, _ in local.streams : dataset => "${var.name_prefix}ingest-${dataset}" }
  # Who may publish to which stream: the producers named in var.stream_publishers.
  stream_publishers = {
    for pair in flatten([
      for dataset, members in var.stream_publishers : [
        for member in members : { dataset = dataset, member = member }
      ]
    ]) : "${pair.dataset} ${pair.member}" => pair
  }
  # The Pub/Sub service agent writes the files: objects.create and buckets.get on the
  # landing bucket (create-cloudstorage-subscription, "Required roles"), nothing broader.
  stream_writer_roles = length(local.streams) > 0 ? toset([
    "roles/storage.objectCreator",
    "roles/storage.legacyBucketReader",
  ]) : toset([])
}

resource "google_pubsub_schema" "stream" {
  for_each = local.streams

  name       = local.stream_ids[each.key]
  type       = "AVRO"
  definition = file("${local.stream_schema_dir}/${each.value.schema}")
}

# The same schema in the artifacts bucket, where validate reads it
# (cascade.core.streams.read_stream_fields, DatasetPaths.stream_schema): a record naming
# a field the schema does not (the topic accepts one) is split out as a dead letter
# rather than quarantining the whole batch. The local cloud's provisioning writes the
# same object (cascade.localcloud.gcs_subscriber.publish_stream_schemas).
resource "google_storage_bucket_object" "stream_schema" {
  for_each = local.streams

  bucket       = google_storage_bucket.artifacts.name
  name         = "datasets/${each.key}/stream_schema.avsc"
  content      = file("${local.stream_schema_dir}/${each.value.schema}")
  content_type = "application/json"
}

resource "google_pubsub_topic" "stream" {
  for_each = local.streams

  name         = local.stream_ids[each.key]
  kms_key_name = var.kms_key_name
  labels       = { dataset = each.key, purpose = "stream" }

  message_retention_duration = "604800s"

  schema_settings {
    schema   = google_pubsub_schema.stream[each.key].id
    encoding = "JSON"
  }

  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

resource "google_storage_bucket_iam_member" "stream_writer" {
  for_each = local.stream_writer_roles

  bucket = google_storage_bucket.landing.name
  role   = each.key
  member = local.pubsub_service_agent
}

resource "google_pubsub_subscription" "stream" {
  for_each = local.streams

  name  = "${local.stream_ids[each.key]}-gcs"
  topic = google_pubsub_topic.stream[each.key].id

  # max_duration may not exceed the ack deadline (cascade.core.streams.StreamSpec checks).
  ack_deadline_seconds       = each.value.ack_deadline_s
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }

  # Messages Pub/Sub cannot write (a missing bucket, a lost grant) go to the dead letters.
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.this[local.topology_defaults.dead_letter_topic].id
    max_delivery_attempts = each.value.max_delivery_attempts
  }

  cloud_storage_config {
    bucket                   = google_storage_bucket.landing.name
    filename_prefix          = "${each.key}/stream-"
    filename_suffix          = ".avro"
    filename_datetime_format = "YYYY-MM-DD/hh_mm_ssZ"
    max_duration             = "${each.value.max_duration_s}s"
    max_bytes                = each.value.max_bytes
    max_messages             = each.value.max_messages

    # subscription_name, message_id, publish_time, attributes and data (the producer's
    # JSON bytes) per record: transform removes duplicates by message_id.
    avro_config {
      write_metadata   = true
      use_topic_schema = false
    }
  }

  labels = { dataset = each.key, purpose = "stream" }

  # Without the grants the subscription goes to state PERMISSION_DENIED.
  depends_on = [google_storage_bucket_iam_member.stream_writer]
}

# The service agent pulls a message it forwards to the dead-letter topic (it publishes
# there already: pubsub.tf, dead_letter_publisher).
resource "google_pubsub_subscription_iam_member" "stream_dead_letter_forwarding" {
  for_each = local.streams

  subscription = google_pubsub_subscription.stream[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

resource "google_pubsub_topic_iam_member" "stream_publisher" {
  for_each = local.stream_publishers

  topic  = google_pubsub_topic.stream[each.value.dataset].id
  role   = "roles/pubsub.publisher"
  member = each.value.member
}
