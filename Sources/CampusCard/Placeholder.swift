enum CampusCardPlaceholder {}
