"""Audio in: resampling, voice activity detection, streaming features."""
