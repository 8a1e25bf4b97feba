-- Control migration 8: how each move copies, and the handle naming a stream's objects.
ALTER TABLE workspace_moves
    ADD COLUMN method text CHECK (method IN ('logical', 'copy')),
    ADD COLUMN handle text CHECK (handle ~ '^dl_move_[0-9a-f]{16}$');
