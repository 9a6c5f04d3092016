"""The Dagster layer, one folder per domain (each holds its assets and the sensors, schedules and
resources that belong to them): ``plant`` (the storage resource and the partitions every domain
shares), ``intake``, ``training``, ``evaluation`` and ``archive``. ``sr_pipeline.definitions``
gathers them into the code location. No tensor maths here: assets call the job packages."""
