terraform {
  # optional() object attributes need 1.3, terraform_data needs 1.4; 1.11 is what CI runs.
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.31.0, < 8.0.0"
    }
  }

  # State lives in a GCS bucket created once by hand (see README.md, "State bucket").
  # The bucket and prefix are passed at init time: terraform init -backend-config=...
  backend "gcs" {}
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = merge(var.labels, {
    app        = "cascade"
    managed-by = "terraform"
  })
}
