enum CardReaderPlaceholder {}
