"""Shadow traffic: the mirror that replays sampled payloads to shadows, where it reaches
them, how answers agree, the stored results and their metrics, and the payload log.
Which shadow gets what is a policy (`policies.replay`); imports no concrete platform."""
