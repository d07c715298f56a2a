"""Tools ▸ Fine-tune: the dialog (:mod:`.dialog`), the labelled set's editor (:mod:`.labels_editor`),
the training curves (:mod:`.curves`) and the results' tabs (:mod:`.results_view`)."""
