"""Deploying `kennel serve` to a cluster: one replica sized by `kennel fit`'s own functions
(``sizing``), the replicas a load needs (``scale``), the Kubernetes objects that run it
(``k8s``), and their YAML (``render``). Everything here is pure: the CLI resolves the model and
the hardware, and writes the files."""
