"""Pure logic: job files, hostfiles, rendering, validation, LoRA counts, plans and layouts. No host I/O."""
