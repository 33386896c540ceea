"""The report stage: figures and a short summary of a trained, evaluated run (``RUN/report/``).

Modules, in data-flow order (importing this package imports none of them, and nothing heavy):

* :mod:`~interestgym.report.scalars` reads the run's TensorBoard scalars;
* :mod:`~interestgym.report.tables` turns ``evaluation.json`` into rows, cells, verdicts and protocol lines;
* :mod:`~interestgym.report.timelines` replays a few users with the policy (implied topic mix, actions);
* :mod:`~interestgym.report.figures` draws the PNGs (matplotlib, imported only when drawing);
* :mod:`~interestgym.report.render` writes the Markdown and the self-contained HTML summary;
* :mod:`~interestgym.report.build` runs them in order (:func:`~interestgym.report.build.build_report`);
* :mod:`~interestgym.report.cli` is ``interestgym report``.
"""
