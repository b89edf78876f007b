"""Scale-out on Ray: sessions, workers and retries (`cluster`), shards of a pass over images
merged exactly (`shards`), and sweeps of child runs (`sweep`).

Layer: above surgery; imports the layers below it (feeds, caffeio and core today).
"""
