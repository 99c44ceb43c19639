"""The ``nas`` subcommands, one module per group; :mod:`nas.cli` lists them in its ``COMMANDS`` table.

* :mod:`~nas.commands.base`: the :class:`~nas.commands.base.Command` base and shared helpers;
* :mod:`~nas.commands.catalog`: ``zoo``, ``build``, ``spaces``, ``space``;
* :mod:`~nas.commands.latency`: ``predict``, ``targets``, ``profile``;
* :mod:`~nas.commands.search`: ``search``, ``history``, ``plot``, ``finalists``;
* :mod:`~nas.commands.export`: ``export``;
* :mod:`~nas.commands.training`: ``supernet train``, ``train``;
* :mod:`~nas.commands.quantization`: ``quantize``, ``analyze``.
"""
