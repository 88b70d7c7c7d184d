"""Job settings for tests that run the whole pipeline on the CPU (with the ``tiny_model`` fixture)."""

TEST_OVERRIDES = {
    # Enough of a fit for a surface to exist, small enough for the CPU suite.
    "capture": {"num_views": 12, "resolution": 32},
    "reconstruct": {"steps": 100, "rays_per_batch": 512, "preview_every": 50},
    "export": {"iso_density": 10.0},  # a 100-step fit at 32 px is soft: contour lower than the default 88.7
}
