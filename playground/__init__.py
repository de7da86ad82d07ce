"""Deep Learning Playground: see and touch classic deep-learning systems, live."""

__version__ = "0.1.0"
APP_NAME = "Deep Learning Playground"
ORG_NAME = "DeepLearningPlayground"
