"""Camera uploads into the catalog: the ``raw_plant_images`` asset, its job, and the upload sensor that claims stable uploads and requests ingestion and then the batch's archive run."""
