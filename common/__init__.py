"""What train/, serve/ and eval/ share: settings base, model resolution, adapter manifests, energy meters."""
