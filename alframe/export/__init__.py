"""What a labelling job hands over: the labelled dataset (CSV, ImageFolder, Label Studio), the model
as an MLflow model, predictions on new images, and the reader of finished run folders."""
