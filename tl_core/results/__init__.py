"""What a trained run gives back: predictions (:mod:`~tl_core.results.inference`), metrics
(:mod:`~tl_core.results.evaluate`), Grad-CAM heat maps (:mod:`~tl_core.results.explain`) and the
files to take home (:mod:`~tl_core.results.export`, with the bundle's ``templates/predict.py``).
Everything here starts from a run folder alone."""
