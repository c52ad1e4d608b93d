"""Post-training tools: trained models on disk (`saved_models`), moving them between world frames
(`frames`), camera paths and camera files (`camera_paths`), rendering them from any cameras
(`novel_views`) and exporting them (`export`)."""
