"""Audio-visual perception of the people in front of a camera: faces tracked, who is speaking
(audio-visual synchrony), the sounding object's mask, and a cheap glance that decides where
the expensive recognizers look (docs/perception.md)."""
