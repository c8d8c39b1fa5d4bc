"""The command line (``cascade ...``): local cloud control, runs, reports, the demo."""
