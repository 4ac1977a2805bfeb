enum PCSCPlaceholder {}
