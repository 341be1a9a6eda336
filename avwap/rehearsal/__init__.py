"""``avwap rehearse``: the compose stack as local processes on a warped clock, against the stand-ins.

``compose`` reads docker-compose.yml (commands, environment, env files, restart policy, volumes);
``warp`` sets up libfaketime so every process (Redis included) takes the warped time for real time;
``supervisor`` runs the services with compose's restart policy; ``run`` plays the week; ``report``
turns what happened into a timeline, a summary and the expectations. See docs/rehearsal.md.
"""
