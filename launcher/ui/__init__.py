"""`alaunch ui`: the local web dashboard (server in :mod:`launcher.ui.server`, one follower per
job in :mod:`launcher.ui.hub`, the page data in :mod:`launcher.ui.data`, static files vendored)."""
