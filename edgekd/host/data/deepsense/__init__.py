"""Import a DeepSense 6G scenario folder into the edgekd dataset format.

A scenario folder holds one CSV (``scenarioN.csv``; ``scenarioNN_dev.csv`` for
31-34) whose rows are frames and whose columns name per-frame files relative
to the folder (``./unit1/...``):

==================== ===================================================================
column               file
==================== ===================================================================
``unit1_rgb``        camera image (960x540 JPEG; any format Pillow reads)
``unit1_radar``      raw FMCW cube, complex ``[4 Rx, samples, chirps]`` (.mat key ``data``; .npy for 31-34)
``unit1_lidar_SCR``  preprocessed LiDAR scan, ``data [216, 2]`` in metres: column 0 (.mat)
``unit1_lidar``      raw LiDAR: 2-D scan ``data [N, 2]`` (.mat, scenarios 8/9) or 3-D cloud (.ply, 31-34)
``unit1_pwr_60ghz``  received power of every beam (.txt, 64 numbers; literal ``nan`` rows are dropped)
``unit1_beam[_index]`` best beam, 1-based (used when there is no power column; checked otherwise)
``unit1_loc``        base-station GPS latitude/longitude (.txt)
``unit2_loc[_cal]``  user GPS latitude/longitude (.txt)
``index``            frame number; a jump (removed frames) starts a new segment
``seq_index``        drive (sequence) id; splits are by sequence
``time_stamp[UTC]``  ``['HH-MM-SS-mmm']`` (8/9) or ``time_stamp`` ``HH:MM:SS-microseconds`` (31-34)
==================== ===================================================================

Each modality whose column is present runs through the same preprocessing as
the synthetic scenario (``edgekd.host.data.camera/radar/lidar``), so a model
sees the same kind of input from either source; the radar range crop follows
the radar's real bin size and 3-D clouds lose the ground before binning.

The importer is five modules: ``files`` (one reader per file format),
``scenario`` (the CSV, its columns and packaging, the import settings and the
collected problems), ``convert`` (per-modality streaming conversion into
stored frames), ``timing`` (time stamps and segments) and ``importer`` (the
folder walk: labels, drives, conditions, then the dataset writer).
"""

from edgekd.host.data.deepsense.convert import EARTH_RADIUS_M, latlon_to_metres, lidar_raw_to_bins
from edgekd.host.data.deepsense.files import (
    read_image,
    read_latlon,
    read_lidar_2d,
    read_lidar_raw,
    read_lidar_scr,
    read_mat,
    read_ply_points,
    read_radar_cube,
    read_vector_txt,
)
from edgekd.host.data.deepsense.importer import import_deepsense
from edgekd.host.data.deepsense.scenario import COLUMNS, ImportConfig, find_csv, read_csv_rows
from edgekd.host.data.deepsense.timing import parse_time_of_day

__all__ = [
    "COLUMNS", "EARTH_RADIUS_M", "ImportConfig", "find_csv", "import_deepsense", "latlon_to_metres",
    "lidar_raw_to_bins", "parse_time_of_day", "read_csv_rows", "read_image", "read_latlon", "read_lidar_2d",
    "read_lidar_raw", "read_lidar_scr", "read_mat", "read_ply_points", "read_radar_cube", "read_vector_txt",
]
