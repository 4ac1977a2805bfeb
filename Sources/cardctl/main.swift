print("cardctl: being rebuilt")
