"""Pandera schemas (``raw``: a partner file's structure; ``canonical``: the programme's rules)
and the partner specs (``partners/*.yaml``)."""
