"""Parameter sweeps and walk-forward runs of the replay, as rq jobs any number of workers share.

``grid`` reads the grid file and the walk-forward windows, ``jobs.run_point`` is the rq job (one
replay on its own private Redis), ``worker`` the rq worker that runs it, ``runner`` the
coordinator behind ``avwap sweep`` (enqueue, watch, re-run the abandoned, collect), ``results``
the table, ranking, heat map and stitched walk-forward equity. docs/research.md, "Sweeps".
"""
