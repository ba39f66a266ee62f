"""Steps: one Prefect task per step per device, and the transports that reach devices."""
