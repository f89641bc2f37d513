"""distkeras: Spark-native distributed training for Keras 3 (successor of CERN's Distributed Keras)."""
from setuptools import find_packages, setup

setup(
    name="distkeras",
    version="0.1.0",
    description="Distributed Keras training, HEP ingestion and feature engineering on Apache Spark",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["distkeras", "distkeras.*"]),
    python_requires=">=3.10",
    install_requires=[
        "pyspark>=3.5,<5",
        "pyarrow>=14",
        "numpy>=1.24",
        "pandas>=1.5",
        "keras>=3.0",
        "tqdm>=4.60",
        "matplotlib>=3.6",
        "cryptography>=41",      # AES-GCM frame tags of the transport
    ],
    extras_require={
        # Exactly one TensorFlow build: both provide the same `tensorflow` module.
        "cpu": ["tensorflow-cpu>=2.16"],
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        # Keras' other backends (KERAS_BACKEND=jax / torch); neither needs TensorFlow. PyPI's jax
        # is the CPU build (GPU: pip install "jax[cuda12]"); PyPI's torch on Linux is the CUDA
        # build (CPU only: pip install torch --index-url https://download.pytorch.org/whl/cpu)
        "jax": ["jax>=0.4.34"],
        "torch": ["torch>=2.4"],
        "hep": ["uproot>=5.3", "awkward>=2.6", "vector>=1.4", "lz4", "zstandard", "xxhash"],
        "petastorm": ["petastorm==0.13.1"],
        "study": ["scikit-learn>=1.3"],          # the bundled digits set of distkeras.study
        "tune": ["optuna>=3.4"],                  # OptunaSearch
        "tensorboard": ["tensorboard>=2.16"],     # keras.callbacks.TensorBoard on the driver
        "mlflow": ["mlflow-skinny>=2.16"],        # distkeras.tracking (sqlite stores: + sqlalchemy, alembic)
        "deploy": ["venv-pack>=0.2"],             # pack an environment for spark.archives
        # a Spark Connect client (pyspark's own "connect" extra, pyspark >= 4.0)
        "connect": ["grpcio>=1.76", "grpcio-status>=1.76", "googleapis-common-protos>=1.71",
                    "pandas>=2.2"],
        "bench": ["optuna>=3.4", "hyperopt>=0.2.7"],   # benchmarks/search_quality.py
        # the documentation site (mkdocs build --strict; CI builds it)
        "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings-python>=1.10",
                 "mkdocs-jupyter>=0.24"],
        "test": ["pytest>=7", "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6", "scikit-learn>=1.3",
                 "optuna>=3.4", "tensorboard>=2.16", "mlflow-skinny>=2.16", "sqlalchemy>=2",
                 "alembic>=1.12", "venv-pack>=0.2"],
    },
    entry_points={"console_scripts": ["distkeras-generate=distkeras.datasets.delphes:main"]},
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Physics"],
)
