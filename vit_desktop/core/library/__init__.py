"""The library: what was computed of the user's photos, kept between runs in one SQLite file.

Results and the pooled features the head reads are stored per photo and model, keyed on what
makes them valid (the file's size, modification time and a quick content hash; the model's
tensors, preprocessing and precision), so that a folder opened again is not classified again and
a head trained later answers from the stored features. The store is a cache: losing it loses
time, never a result the user saved.

Imports the base and the wings below it (io, labels, models); inference uses it.
"""
