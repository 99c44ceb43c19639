"""The calibration toolchain: how the packaged targets' coefficients are made from published measurements.

Prediction (:mod:`nas.latency.predict`, ``nas predict``, ``nas targets``) reads
only what this toolchain wrote into ``predictors/<target>.yaml`` and imports
none of it. The modules, one job each, in the order they run:

* :mod:`~nas.latency.calibration.models`: reference CNNs (ResNet, VGG, ...) for the
  published rows whose model is not a zoo point, in one registry;
* :mod:`~nas.latency.calibration.select`: choose the published rows of
  ``../shared/calibration`` per target into ``predictors/calibration/<target>.csv``
  (``python -m nas.latency.calibration.select``; the name tables are ``names/*.yaml``);
* :mod:`~nas.latency.calibration.measurements`: read those rows, trace the model behind each;
* :mod:`~nas.latency.calibration.dataset`: a setting's rows and their features;
* :mod:`~nas.latency.calibration.solver`: fit a setting's coefficients (also used by ``nas profile``);
* :mod:`~nas.latency.calibration.validate`: leave-one-family-out figures, written with the coefficients;
* :mod:`~nas.latency.calibration.fit`: the command line
  (``python -m nas.latency.calibration.fit --target v100 --write``).

This package imports nothing on import, so a module can be used without loading the others.
"""
