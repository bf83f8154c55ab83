"""Fine-tuning a style pack (``streamfx styles train``): pairs, losses, trainable adapters and
the loop. Used by the command line only; the frame path never imports this package."""
