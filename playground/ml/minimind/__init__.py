"""MiniMind language models (jingyaogong/minimind) for the Chat tab, with no Qt: the network
(:mod:`.model`), opening released and our own weight files (:mod:`.loaders`), and
token-by-token generation with a key-value cache (:mod:`.generate`)."""
