# Vertex AI Experiments: the trainer (the Vertex AI jobs' account) logs each run's
# parameters, metrics and per-epoch curves to an experiment run of its dataset's
# experiment (cascade.trainer.vertex_experiments), backed by this Vertex AI TensorBoard,
# which also serves the run page's TensorBoard link (cascade.console.vertex_links).
#
# Its full resource name reaches the trainer as CASCADE_VERTEX_TENSORBOARD: the functions
# that submit jobs read it into Settings.vertex_tensorboard and the Vertex AI runner puts
# it in every worker pool's environment. The local cloud never sets it, so locally the
# trainer calls no Vertex AI API. The experiment's region is the jobs' region: a
# TensorBoard in another region is refused by the trainer (and by Vertex AI).

resource "google_vertex_ai_tensorboard" "experiments" {
  display_name = "${var.name_prefix}experiments"
  description  = "Cascade: Vertex AI Experiments of every training run (one experiment per dataset)."
  region       = var.region

  # With a customer-managed key, the TensorBoard and everything under it are encrypted
  # with it (the key must be in the TensorBoard's region).
  dynamic "encryption_spec" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      kms_key_name = encryption_spec.value
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.vertex_ai_tensorboard]
}

# Vertex AI's service agent encrypts and decrypts the TensorBoard's data with the key.
resource "google_kms_crypto_key_iam_member" "vertex_ai_tensorboard" {
  count = var.kms_key_name == null ? 0 : 1

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.vertex_ai_service_agent
}

locals {
  # projects/<project id>/locations/<region>/tensorboards/<id>: the provider's `name` is
  # the API's resource name (with the project number); its last segment is the id. The
  # project id form keeps the console's links (?project=<project id>) readable.
  vertex_tensorboard = join("/", [
    "projects", var.project_id,
    "locations", var.region,
    "tensorboards", element(reverse(split("/", google_vertex_ai_tensorboard.experiments.name)), 0),
  ])
}

output "vertex_tensorboard" {
  description = "The Vertex AI TensorBoard behind the trainer's Vertex AI Experiments (CASCADE_VERTEX_TENSORBOARD)."
  value       = local.vertex_tensorboard
}
