enum CardEmulatorPlaceholder {}
