"""Images -> measurements: CT and MRI simulation."""
