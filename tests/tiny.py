"""Overrides that make any quick-start config a run of a few seconds, shared by the end-to-end tests.

The matching data (480 images of 16 px) is the session fixture ``data_root`` in conftest.py.
"""

TINY = ["data.synthetic.num_samples=480", "data.synthetic.image_size=16", "data.image_size=16",
        "data.crop_padding=1", "model.width=4", "optim.batch_size=32", "schedule.epochs=2",
        "schedule.milestones=[1]", "logging.progress=false", "device=cpu"]
