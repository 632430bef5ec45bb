"""Detection datasets: synthetic shapes (``rcnn_zoo.data.synthetic``) and dataset readers."""
