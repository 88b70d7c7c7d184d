"""Neural fields: the multiresolution hash encoding and the Instant-NGP density + colour field."""
