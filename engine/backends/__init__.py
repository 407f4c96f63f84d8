"""Where node instances run besides threads of the serving process: `ray` (Ray actors).

engine/backends/ray_actor.py is the code that runs inside each actor; ray_instance.py is the
actor seen from the serving process; ray_cluster.py joins a cluster and checks its resources.
Ray is imported only when a pipeline asks for it (`pip install 'pipectl[ray]'`).
"""
