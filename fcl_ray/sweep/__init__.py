"""Ray Tune sweeps of whole federations: ``spec`` reads and checks a sweep file (no Ray),
``trial`` runs one federation as a Tune trial, ``run`` drives the sweep and its MLflow
parent run."""
