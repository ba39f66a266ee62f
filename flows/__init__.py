"""Job flows: one Prefect flow per action; a flow run is a job."""
